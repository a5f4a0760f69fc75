"""Reading and writing records: input formats, crash-safe journals, atomic files. No stage logic lives here."""

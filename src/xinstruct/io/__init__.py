"""Reading and writing records: typed records, the one reader (io.read.iter_records), per-record caches,
journals, atomic files. Below every stage; no stage logic lives here."""

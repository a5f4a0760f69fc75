"""Layer 2: records and the one reader (io.read.iter_records), below every stage."""

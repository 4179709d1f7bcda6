//! Line tables: from an instruction offset to the line `traceback` would report.

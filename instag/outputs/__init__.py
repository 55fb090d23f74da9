"""What a run's results become: their forms (`forms`), the CSV/JSON/JSONL/Parquet writers
(`writers`, `parquet`), path lists (`pathlists`), the files' own tags (`filetags`) and Figure 4
(`plot`)."""

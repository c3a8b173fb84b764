"""Where readings go: line protocol built in bulk, InfluxDB writers (v1, v2), the disk spool used while the
database is down, and the dead-letter and quarantine files. Nothing here knows of dispatch or detectors."""

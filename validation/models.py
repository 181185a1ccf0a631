"""The validation domain keeps no tables: IQ records, archives and backups are signed files."""

"""Backup files on disk: paths, atomic files, manifests, the catalog, the archive reader,
streams, and the readers and writers behind the backup-file ports."""

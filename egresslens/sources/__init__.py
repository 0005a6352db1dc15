"""Readers for every place Azure Firewall logs live: files, Log Analytics, storage."""

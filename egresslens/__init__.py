"""EgressLens: Azure Firewall logs in, least-privilege egress rules out."""
__version__ = "0.1.0"

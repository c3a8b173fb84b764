"""Tools around the service, never imported by it: the demo and the servers it starts, the HTML report,
evaluation against labels, re-ingest of quarantined messages, acknowledgements from the command line, and the
simulator's command."""

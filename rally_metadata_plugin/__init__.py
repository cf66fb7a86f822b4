"""Rally plugins that measure metadata-service downtime during live migration."""

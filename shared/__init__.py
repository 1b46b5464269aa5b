"""The library every haven program imports: protocol, configuration, cluster model, DCS clients."""

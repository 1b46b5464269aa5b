"""Messages between haven's programs: envelope, error codes, endpoints, transport, op schemas."""

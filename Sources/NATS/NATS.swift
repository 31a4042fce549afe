// NATS: placeholder until the wrapper lands.

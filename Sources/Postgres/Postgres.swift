// Postgres: placeholder until the wrapper lands.

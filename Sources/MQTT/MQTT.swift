// MQTT: placeholder until the wrapper lands.

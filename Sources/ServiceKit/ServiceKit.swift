// ServiceKit: placeholder until the wrapper lands.

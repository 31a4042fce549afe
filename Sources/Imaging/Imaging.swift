// Imaging: placeholder until the wrapper lands.

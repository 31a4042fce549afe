// Wire: placeholder until the wrapper lands.

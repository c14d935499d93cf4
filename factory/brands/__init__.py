"""Brand profiles: the voice and the rules every campaign copy for a brand follows."""

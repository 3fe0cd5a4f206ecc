"""Model definitions (one readable file per family), the model artifact, and the shipped default model."""

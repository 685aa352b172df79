"""vidseg."""

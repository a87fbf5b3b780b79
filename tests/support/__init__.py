"""What tests share: the daemon launcher, bundles, and one sample instance of every wire type."""

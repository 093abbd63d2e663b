"""The RAMP networks, their training stages and export to bundles and engines."""

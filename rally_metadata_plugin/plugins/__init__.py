"""Rally plugins (scenario, SLA). Rally imports every module of this package."""

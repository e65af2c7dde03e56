"""The simulator: virtual Allworx servers, the vendor's keyring and desk, fleets, chaos, scenarios."""

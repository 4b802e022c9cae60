"""Model-based and race checks: state machines against the contract's executable model."""

"""PushT: the gym-pusht simulator, a planning expert, and the Diffusion Policy evaluation protocol."""

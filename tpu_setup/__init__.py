"""Scripts for Cloud TPU VMs / pod slices (and the GPU guide): see docs/scaling.md."""

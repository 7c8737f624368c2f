"""Stage II video generator: ReferenceNet, denoising 3D UNet (motion + MM-HAA), PoseGuider, AudioProj."""

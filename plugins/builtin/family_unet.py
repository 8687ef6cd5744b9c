"""Built-in plugin family_unet (under construction)."""

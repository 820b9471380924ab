"""openjepa.masks"""

"""openjepa.methods"""

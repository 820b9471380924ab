"""openjepa.theory"""

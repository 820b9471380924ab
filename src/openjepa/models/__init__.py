"""openjepa.models"""

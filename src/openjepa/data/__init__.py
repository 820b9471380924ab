"""openjepa.data"""

"""openjepa.train"""

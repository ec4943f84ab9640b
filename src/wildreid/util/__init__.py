"""Small shared helpers: atomic files and folders, FAISS search filters.

Imports no other wing.
"""

"""jndqa.store"""

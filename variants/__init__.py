"""jndqa.variants"""

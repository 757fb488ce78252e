"""jndqa.flows"""

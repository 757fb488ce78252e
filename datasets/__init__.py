"""jndqa.datasets"""

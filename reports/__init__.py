"""jndqa.reports"""

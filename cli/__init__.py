"""cadenza.cli"""

"""cadenza.symbolic"""

"""cadenza.rendering"""

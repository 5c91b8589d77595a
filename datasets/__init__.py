"""Recipes that write ready-made image datasets in the layouts imgclf reads."""

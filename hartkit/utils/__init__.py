"""Small helpers shared by every part of hartkit (no model code here)."""

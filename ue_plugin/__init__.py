"""Unreal Engine backend: UnrealCV renderer, instance launcher and editor scripts (see its issue)."""

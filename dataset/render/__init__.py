"""Renderers behind one protocol: the embedded CPU ray caster (and the Unreal backend in ue_plugin)."""

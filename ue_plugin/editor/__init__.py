"""Scripts that run inside the Unreal Editor's Python (they import ``unreal``); see ue_plugin/README.md."""

"""scienceworld: ScienceWorld's tasks in its Java simulator, scored by the simulator. (`server: scienceworld`)."""

"""Music out of cadenza: audio, pictures, engraved scores and HTML example sheets.

- ``fluidsynth.render(score, ...)``: SoundFont audio through the FluidSynth library
- ``ddsp.render(score, preset=...)``: the differentiable harmonic-plus-noise synthesizer
- ``audio.write_audio(path, audio, sample_rate)``: WAV/FLAC, written atomically
- ``pianoroll.plot_pianoroll(score, path)``: a piano-roll PNG
- ``score.render_svg(score, path)``: an engraved score, one SVG per page
- ``sheet.write_sheet(path, title, entries)``: a self-contained HTML page

Submodules import their heavy libraries when used, so importing this package is instant.
"""

"""What test modules share (imported as support.<module>: pytest runs from tests/ with the repository root on
its path). The pieces that benchmarks and scripts need too live in scripts/ (comfy_server, browser, graphs,
sd15, images), so that imports go one way: tests -> benchmarks -> scripts -> deadiff_core."""

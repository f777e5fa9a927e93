"""Map the top-level folders frontends/, passes/ and backends/ into the lbdl_graph namespace."""

from setuptools import find_packages, setup

ROOTS = {
    "lbdl_graph": "lbdl_graph",
    "lbdl_graph.frontends": "frontends",
    "lbdl_graph.passes": "passes",
    "lbdl_graph.backends": "backends",
}

packages = []
for package, folder in ROOTS.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS, package_data={"lbdl_graph.frontends": ["data/*"]})

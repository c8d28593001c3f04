# Installed as /etc/profile.d/venv-path.sh. JupyterLab's terminals start login shells, and Debian's
# /etc/profile resets PATH, which would leave the venv's python, pip and jupyter out of them.
case ":$PATH:" in
    *:/opt/venv/bin:*) ;;
    *) PATH="/opt/venv/bin:$PATH" ;;
esac

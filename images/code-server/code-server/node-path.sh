# Node and npm for login shells (JupyterLab's terminals start one): /opt/node/bin is kept off the image's
# PATH so that the Jupyter server does not run Node at start (see images/code-server/Dockerfile).
case ":$PATH:" in
    *:/opt/node/bin:*) ;;
    *) PATH="$PATH:/opt/node/bin" ;;
esac
